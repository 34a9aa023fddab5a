"""One stream's pipeline: gate, frontend, segmenter and transcriber stages under an async shell (`stream`)."""
