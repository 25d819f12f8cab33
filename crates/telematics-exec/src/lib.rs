//! Sans-IO command execution: preconditions, actuation state machine, run timer, idempotency and result lifecycle.
