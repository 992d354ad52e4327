"""Foundation: the wire schemas, settings, CLI basics and the real-services test harness."""
