"""CineDub: raw film and TV footage in, multimodal Parquet shards for movie-dubbing models out."""

__version__ = "0.1.0"
