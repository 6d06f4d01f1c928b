"""The package version, in a leaf module: any module can read it without importing the package."""

__version__ = "0.2.0"
