"""sah.cli"""
