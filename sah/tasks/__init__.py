"""sah.tasks"""
