"""WWKS2: the XML-over-TCP protocol pharmacy software (the IMS) uses to drive a storage robot.

The machine is the storage system (the server); the pharmacy software connects as a client.
The package is layered, each module usable and tested on its own:

- :mod:`~dispenser.wwks2.framing`: splits the byte stream into messages on ``</WWKS>``;
- :mod:`~dispenser.wwks2.xmlio`: parses one message safely and writes the envelope;
- :mod:`~dispenser.wwks2.model` and :mod:`~dispenser.wwks2.messages`: typed messages,
  decoded from and encoded to XML;
- :mod:`~dispenser.wwks2.backend`: what the server needs from the machine (a Protocol);
- :mod:`~dispenser.wwks2.server`: the asyncio TCP server;
- :mod:`~dispenser.wwks2.config`: the ``[wwks2]`` configuration table.

The package imports nothing here, so that the configuration can import
:mod:`dispenser.wwks2.config` without pulling in the server. See docs/wwks2.md.
"""
