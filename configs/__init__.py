"""Per-env TOML configs. This folder is the source; the wheel ships it inside the package as `pipeline.configs`
(see [tool.setuptools] in pyproject.toml), and `pipeline.config` reads it with importlib.resources."""
