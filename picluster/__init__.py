"""picluster: from bare Raspberry Pis to the Pi cluster v1.4 K3S platform, and operating it afterwards."""

__version__ = "0.1.0"
