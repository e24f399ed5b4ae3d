"""Hosting: models, endpoints (status machine over a replica backend) and their autoscaling."""
