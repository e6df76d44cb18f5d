"""The device gateway: how real devices, on flaky links and with their own credentials,
get readings into the telemetry topic.

- ``devices``: pure logic of device identities and tokens (hashing, the Mosquitto
  password and ACL files derived from the registry); ``registry``: their storage.
- ``devices_cli``: ``ecoretrofit devices add|list|revoke``.
"""
