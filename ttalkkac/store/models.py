"""SQLAlchemy models: datasets, training jobs, job events, adapters. (Filled by the training work.)"""
