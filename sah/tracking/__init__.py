"""sah.tracking"""
