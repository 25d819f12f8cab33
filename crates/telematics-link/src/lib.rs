//! mTLS MQTT session to the back end (rumqttc + rustls/ring), status/last will, reconnect, outbox drain.
