"""pos-demo: the whole system on one machine, emulated hardware, an embedded broker.

The only package that imports all the others: it plays the parts a shop, a field
technician and a payment network would play (docs/demo.md).
"""
