"""The app's Streamlit-side helpers (the library never imports streamlit): the server's model cache
and access policy (`cache`), charts with their exports (`charts`), form fields that explain bad input
(`forms`) and live views of background jobs, the sidebar's job list included (`live`)."""
