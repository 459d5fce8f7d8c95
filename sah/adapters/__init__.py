"""sah.adapters"""
