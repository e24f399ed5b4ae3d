"""What every skmaker process needs: settings, lifecycle, errors, artifact-store access."""
