"""Driver for the picking robot (Modbus TCP/RTU)."""
