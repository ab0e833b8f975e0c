"""Spending less than the batch discount alone, and never more than allowed.

Pure rules, each in its own module; the lanes call them and keep their state in tables.

- :mod:`.prefixes`: the shared prompt prefix of a request, and Anthropic's cache breakpoint.
- :mod:`.profile`: what the rules need to know about a queued request, computed once.
- :mod:`.primer`: which shared prefixes get a one-request primer batch first.
- :mod:`.admission`: the enqueued-token estimate and which batch may be submitted now.
- :mod:`.budget`: daily USD budgets per tenant and overall: reserve, spend, release.
- :mod:`.flex`: when a synchronous call uses OpenAI's Flex tier and when it falls back.
- :mod:`.control`: the one object the lanes hold, binding these rules to the settings.
"""
