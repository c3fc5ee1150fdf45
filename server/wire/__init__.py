"""The wire formats over the router: JSON-RPC 2.0 (``jsonrpc.py``), tRPC's HTTP protocol
(``trpc.py``), and the JSON error of the plain HTTP routes (``http.py``). Each parses, hands
(path, input, caller) to ``Router.call`` and maps ``server.errors`` to its own shape in one
function."""
