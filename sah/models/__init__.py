"""sah.models"""
