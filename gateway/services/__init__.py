"""The work behind each route (swap, faces, jobs, stream, verify): the routes parse and answer,
the services decide and call Triton (through ``client``), the stores and the job backend."""
