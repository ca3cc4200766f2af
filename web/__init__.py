"""The Flask front end: pages and the JSON API. Never imports TensorFlow; it stores
uploads, writes rows and sends Celery tasks by name."""
