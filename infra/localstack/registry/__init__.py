"""A small Confluent-compatible Schema Registry (Avro only).

No Confluent registry or Karapace can be installed on the project's machines, so this
package serves the subset of Confluent's REST API that confluent-kafka's
``SchemaRegistryClient`` / Avro serdes and ClickHouse's ``AvroConfluent`` format use.

* ``infra.localstack.registry.core``   pure logic: schemas, subjects, versions, ids, compatibility rules;
                      the state is the fold of a log of change records.
* ``infra.localstack.registry.store``  that log: ``MemoryLog`` or ``KafkaLog`` (a one-partition topic).
* ``infra.localstack.registry.server`` the HTTP API: ``RegistryServer(log, credentials=(user, password), host=..., port=...).start()``.
* ``infra.localstack.registry_cli`` ``ecoretrofit registry serve [--host H] [--port P] [--memory]``.
"""
