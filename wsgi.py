from ticker import create_app

app = create_app()
