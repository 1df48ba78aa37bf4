"""Device telemetry ingestion (MQTT and HTTP); arrives with the device-fault issue."""
