"""
exp.twisted: the Deferred-native SDK.
"""
