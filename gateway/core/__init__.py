"""What every request goes through, and the settings: ``config`` (pydantic-settings), ``guard``
(body size, HMAC signature), ``admission`` (slots, pixels, deadlines), ``errors`` and ``codes``
(one error body, every code documented), ``metrics``; the checks of inputs (``images``,
``urls``); what the gateway reads from Triton (``health``, ``precision``); ``marking`` (the
marks on every output) and ``stream`` (the live protocol's messages)."""
