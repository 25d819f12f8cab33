//! CAN I/O shells: SocketCAN (tokio), candump log replay and an in-process bus behind one trait.
