"""The engine: a generic, topic-agnostic consumer loop that handlers plug into."""
