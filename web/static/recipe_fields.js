// Training and schedule forms: show the fields of the chosen recipe (and modality)
// only. A field of another recipe is hidden and disabled, so it is not sent (the server
// refuses an option its recipe, or its modality, does not read).
(function () {
  // An option limited to some modalities (data-modalities) is shown only when the
  // form's modality radio, if it has one, is one of them.
  const listed = (text) => (text || '').split(' ').filter(Boolean);
  for (const select of document.querySelectorAll('select.recipe-choice')) {
    const form = select.form;
    const apply = () => {
      const checked = form.querySelector('input[name="modality"]:checked');
      for (const field of form.querySelectorAll('[data-recipes]')) {
        const recipes = listed(field.dataset.recipes);
        const modalities = listed(field.dataset.modalities);
        const shown = (recipes.length === 0 || recipes.includes(select.value)) &&
          (modalities.length === 0 || !checked || modalities.includes(checked.value));
        field.hidden = !shown;
        for (const input of field.querySelectorAll('input, select')) input.disabled = !shown;
      }
    };
    select.addEventListener('change', apply);
    for (const radio of form.querySelectorAll('input[name="modality"]')) {
      radio.addEventListener('change', apply);
    }
    apply();
  }
})();
