"""Helpers for the image-stage tests: a raspi-shaped image builder, a Range-capable HTTP server on
127.0.0.1, and a test double of the device-inspection layer fed with recorded lsblk outputs."""
