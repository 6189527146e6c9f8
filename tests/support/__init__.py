"""Test helpers: tiny random models and corpora, float32 rounding bounds, stand-ins for the Hub and Unity."""
