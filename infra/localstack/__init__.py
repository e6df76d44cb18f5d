"""The local stack: stand-ins for servers that cannot be installed here, and their supervisor.

Nothing in the product imports this package; it exists so the whole city runs on a
laptop without Docker. In the cluster (``infra/docker-compose.yml``) the real servers
take these places, and only ``ECO_*`` variables differ.

* ``infra.localstack.stack``              the supervisor: starts, checks and stops every component.
* ``infra.localstack.registry``           a Confluent-compatible schema registry (none is installable here).
* ``infra.localstack.warehouse_service``  ClickHouse's HTTP interface over embedded chdb.
"""
