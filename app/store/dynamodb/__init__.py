"""The DynamoDB adapter of the store port; DynamoStore (store.py) assembles it."""
