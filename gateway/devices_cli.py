"""``ecoretrofit devices add|list|revoke``: the devices allowed to send readings.

    ecoretrofit devices add --home H000042 [--device meter-1]   prints the token once
    ecoretrofit devices list [--all]
    ecoretrofit devices revoke meter-1

Every change rewrites the MQTT broker's password and ACL files and asks a running local
broker to reload them; the HTTPS gateway reads the registry per request. Either way a
revoked token is refused from the next request on, with nothing restarted.
"""

from __future__ import annotations

import argparse
import secrets
import time

from ecoretrofit.errors import CommandError
from gateway.broker_auth import write_broker_auth
from gateway.devices import DeviceError
from gateway.registry import DeviceRegistry, registry_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="register a device of one home and print its token (shown once)")
    add.add_argument("--home", required=True, help="the home the device belongs to, e.g. H000042")
    add.add_argument("--device", help="device id (default: <home>-<random>)")
    lst = sub.add_parser("list", help="registered devices (never their tokens)")
    lst.add_argument("--all", action="store_true", help="include revoked devices")
    rev = sub.add_parser("revoke", help="revoke a device's token, effective at once")
    rev.add_argument("device")


def run(args: argparse.Namespace, settings) -> int:
    registry = DeviceRegistry(registry_path(settings))
    try:
        if args.action == "add":
            device_id = args.device or f"{args.home}-{secrets.token_hex(3)}"
            created = registry.add(args.home, device_id)
            _sync(settings, registry)
            print(f"device  {created.device.device_id}")
            print(f"home    {created.device.home_id}")
            print(f"token   {created.token}")
            print("(the token is shown only now; only its hash is stored)")
        elif args.action == "list":
            print(f"{'device':<24} {'home':<12} {'created (UTC)':<20} revoked (UTC)")
            for d in registry.all():
                if d.active or args.all:
                    print(f"{d.device_id:<24} {d.home_id:<12} {_utc(d.created_ms):<20} {_utc(d.revoked_ms) if d.revoked_ms else '-'}")
        elif args.action == "revoke":
            d = registry.revoke(args.device)
            _sync(settings, registry)
            print(f"revoked {d.device_id} (home {d.home_id})")
    except DeviceError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _sync(settings, registry: DeviceRegistry) -> None:
    from infra.localstack.stack import LocalStack

    write_broker_auth(settings, registry, reload=LocalStack(settings, log=lambda line: None).reload_broker_auth)


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
