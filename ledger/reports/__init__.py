"""What people read of the ledger: one line per event, a customer's exported history."""
