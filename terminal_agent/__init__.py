"""terminal_agent: the service on the Raspberry Pi at the till.

PC/SC reader adapter, EMV contact kernel, PIN pad driver, MQTT link, transaction state
machine and journal (see docs/ and DESIGN section 2). Imports paycore only.
"""
