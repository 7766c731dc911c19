"""Rate-limited clients for calling other APIs: ``ratekeeper.clients.httpx`` (sync and async
transports) and ``ratekeeper.clients.requests`` (an adapter). Each waits for the local limiter
before a request and honours the upstream's own signals after it (`ratekeeper.clients.gate`
describes how, `ratekeeper.clients.signals` what is read). Import the submodule you need: this
package imports neither httpx nor requests.
"""
