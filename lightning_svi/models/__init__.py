"""Models: one Pyro model per file, each with its data spec, its ``full`` guide and, where one
exists, its closed-form log evidence."""
