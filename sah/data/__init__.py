"""sah.data"""
