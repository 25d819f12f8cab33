//! Sans-IO telemetry: CBOR payloads, periodic and on-change publishing schedule, alert rules with hysteresis.
