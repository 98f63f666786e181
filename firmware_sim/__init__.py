"""Simulator of the picking robot and label printer, over real transports."""
