"""The node agent: dials the mesh, runs jobs on vLLM, signs results."""
