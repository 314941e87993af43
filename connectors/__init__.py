"""Channel connectors: each turns a channel's updates into IncomingMessages and sends replies."""
