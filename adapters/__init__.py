"""Drop-in rerankiing wrappers of the official Elasticsearch and OpenSearch clients."""
