"""sah.report"""
