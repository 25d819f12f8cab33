//! Sans-IO CAN signal pipeline: DBC loading, frame decode/encode, VSS mapping, candump parsing, vehicle state store.
