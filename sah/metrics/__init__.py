"""sah.metrics"""
