"""`familiar serve`: the model kept loaded behind an OpenAI-compatible API on 127.0.0.1, with a bearer token.

discovery (the file that tells the CLI where a running server is), api (the OpenAI request and response shapes),
service (the loaded model behind a lock), handler (HTTP), client (what `familiar chat`/`generate` use).
"""
