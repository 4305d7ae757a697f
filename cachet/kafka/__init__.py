"""The Kafka adapter: client settings, the consume loop that never dies, and
the verifying consumer (the seal verifier wired to Kafka).

It sits between the ledger (pure verification, no Kafka) and the stages that
read and write the log (materializers, producers, processors).
"""
