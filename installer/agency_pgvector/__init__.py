"""AgencyStack pgvector component installer."""

__version__ = "0.1.0"
