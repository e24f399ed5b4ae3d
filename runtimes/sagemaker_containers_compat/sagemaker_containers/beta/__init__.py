"""The toolkit's `beta` namespace; scripts use `beta.framework`."""
