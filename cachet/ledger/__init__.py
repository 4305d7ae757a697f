"""The signed ledger: producer identities, the seal verifier, the verifying consumer."""
