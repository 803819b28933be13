"""EVerest's external APIs as their AsyncAPI 3.0 documents describe them: read at run time from an
EVerest installation or a path the user gives, turned into attrs classes and node types.

``documents`` finds and reads the files; ``schemas`` makes Python types from their JSON schemas;
``model`` reads a document's operations; ``catalogue`` ties them together, one API at a time;
``examples`` makes values that fit a schema (for the simulator). The node classes are made in
``evflow.nodes.everest_operations``, found through the entry point group ``evflow.api_nodes``.
"""
