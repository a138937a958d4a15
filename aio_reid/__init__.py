"""The `aio-reid` command line. A package of its own, apart from `modeling_aio`, whose import registers the model
with transformers (seconds of torch and transformers imports): `aio-reid --help` starts without either."""
