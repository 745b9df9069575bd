"""grokpipe's Hydra plugins: Hydra loads sweepers and launchers only from the `hydra_plugins` namespace."""
